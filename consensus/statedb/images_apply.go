package statedb

// imageApply maps this resource's commands to their apply functions.
var imageApply = map[CmdType]applyFunc{}
