"""What crosses the broker, owned by neither side: the reading schema and its decoder, the
payload encoder, the field/unit mapping, the Sparkplug B codec, the paho client factory and TLS.

The agent and the simulator both import it; it imports only :mod:`config` (topics, fields and
settings), so neither side has to import the other to agree on a message.
"""
