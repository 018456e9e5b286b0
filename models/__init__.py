"""forewarn's forecasters: networks, scaling, training and checkpoints."""
