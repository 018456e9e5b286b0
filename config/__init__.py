"""forewarn's ground floor: the settings, the pure types they check against, and deploy files.

It imports no other forewarn package, so every package may import it: the settings sections
(one module per concern, gathered in ``config.settings``), every topic forewarn reads or
writes (``config.topics``), the fields and units of a reading (``config.fields``), and the
mosquitto, Prometheus, Alertmanager and Grafana files of the shipped stack.
"""
