package statedb

// computeApply maps this resource's commands to their apply functions.
var computeApply = map[CmdType]applyFunc{}
