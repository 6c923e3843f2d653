"""DeepIM-style iterative pose refiner: render at the current pose, compare with the image, predict an update."""
