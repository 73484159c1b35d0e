package main

import "github.com/spf13/cobra"

// imageCmd is `peerstack image …`.
func imageCmd() *cobra.Command {
	return &cobra.Command{Use: "image", Short: "Images", Hidden: true}
}
