"""The live layer: views computed once, pushed to every open page as a snapshot and then deltas.

It imports the domain (``topology``) only, and nothing but the dashboard imports it. Writers learn
nothing of it: they announce the views they changed through ``topology.changes``, and
``LiveConfig.ready`` subscribes ``broadcast.mark_changed`` to that signal. The views are computed in the
live layer's own process, ``manage.py broadcast`` (``broadcast.Broadcaster``), never in a collector.

Delta protocol (websocket JSON messages, server to client)::

    {"type": "snapshot", "view", "window", "seq", "data": {...full view...}}
    {"type": "delta", "view", "window", "seq", "prev", "changes": {key: change}}
    {"type": "invalidate", "view", "seq"}

A change for a list of records with an ``id`` (or ``name``) is ``{"upsert": [records],
"remove": [ids]}``; for anything else it is ``{"set": value}``. A client applies a delta only when
``prev`` equals the sequence number it holds; otherwise it sends ``{"type": "resync"}``.
"""
