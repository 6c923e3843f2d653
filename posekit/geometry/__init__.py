"""Pure geometry (numpy + torch), no I/O: rotations, rigid transforms, cameras and crops."""
