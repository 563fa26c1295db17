"""corral's user side: the `corral` CLI and the embedded launcher behind `corral serve`."""
