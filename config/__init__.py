"""forewarn's configuration (pydantic-settings) and deploy files."""
