"""The estimation pipeline: detect -> coarse (aae | regress) -> refine (deepim [+ polish])."""
