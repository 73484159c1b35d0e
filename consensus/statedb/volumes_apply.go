package statedb

// volumeApply maps this resource's commands to their apply functions.
var volumeApply = map[CmdType]applyFunc{}
