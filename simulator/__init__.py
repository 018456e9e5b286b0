"""forewarn's simulator: the seed's signal model for a fleet, published over MQTT."""
