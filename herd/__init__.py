"""herd's user side: the `herd` CLI and the embedded launcher behind `herd serve`."""
