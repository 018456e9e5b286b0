"""The `forewarn` command line: composes the agent, the simulator and the models.

The top floor of the house: it may import every other package, and none imports it.
"""
