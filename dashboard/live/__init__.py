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

On the wire (``protocol.frames``): a message of up to 1 KiB is a text frame. A larger one, for a client
that connected with ``?compression=deflate`` (live.js does), is its JSON deflated (zlib format, read by
the browser's ``DecompressionStream("deflate")``) in binary frames of at most 512 KiB, each behind an
8-byte header (message id, part index, part count); the client joins the parts, inflates, and handles
the messages in the order they came. The broadcaster deflates a message once for all its clients. A
client that did not ask gets text, a large message as ``{"type": "chunk", "id", "i", "n", "text"}``
frames it joins. At 5,000 services and 25,000 edges the snapshot is 7.3 MB of JSON and 0.65 MB
deflated; a delta of 1 % of the edges 61 KiB and 7.4 KiB (figures: protocol's docstring).
"""
