"""The one error a configuration raises: its message names the key, the value and the fix."""


class ConfigError(Exception):
    """A configuration that cannot start forewarn; the message names key, value and fix."""
