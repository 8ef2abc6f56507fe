"""The peer designs of issue 4's table, each as small as the design it stands for.

Each module exposes ``create_app()`` (an ASGI or WSGI app built from the environment:
``REDIS_URL``, ``TWILIO_AUTH_TOKEN``) so that the bench runs it under the server the design names.
Jobs are enqueued by dotted path to :func:`bench.peers.noop.noop`.
"""
