package statedb

// networkApply maps this resource's commands to their apply functions.
var networkApply = map[CmdType]applyFunc{}
