"""Pub/sub between processes and machines: the Broker protocol (``broker.py``) and its engines:
in-process (``local.py``), the ``--processes`` worker mesh (``workers.py``) and Redis (``redis.py``)."""
