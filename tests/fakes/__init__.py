"""Local fake vendor servers that speak each vendor's wire protocol on 127.0.0.1.

Each fake is an async context manager; ``fake.base_url`` is the ``http://127.0.0.1:PORT``
to hand to the production client (through the block's ``baseUrl`` or the vendor's
``*_BASE_URL`` variable). Import them as ``from fakes.deepgram import FakeDeepgram``:
pytest puts ``tests/`` on ``sys.path`` for test packages under it.
"""
