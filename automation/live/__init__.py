"""The live role: the log follower, leadership, snapshots, webhook steps."""
