"""The inspector: what the tunnel did, on a page and a JSON API on 127.0.0.1.

Modules, from the bytes to the page:

* :mod:`~edge_agent.inspect.observe`: the :class:`Recorder`, an observe-only parser fed
  with the HTTP/1.1 bytes the agent forwards (never changes or delays them);
* :mod:`~edge_agent.inspect.sse`, :mod:`~edge_agent.inspect.wsframes`,
  :mod:`~edge_agent.inspect.a2a`: what it understands inside a body;
* :mod:`~edge_agent.inspect.store`: the bounded store of exchanges and the masking of
  secrets;
* :mod:`~edge_agent.inspect.tap`: the adapter that feeds today's agent (decoded heads and
  body chunks) into the Recorder as bytes;
* :mod:`~edge_agent.inspect.server`, ``page.html``, :mod:`~edge_agent.inspect.replay`:
  the HTTP server, the page, and replay against the local target;
* :mod:`~edge_agent.inspect.launch`: the command-line flags and start-up.

This package's ``__init__`` imports nothing: :mod:`edge_agent.streams` imports
:mod:`~edge_agent.inspect.tap`, and an agent without the inspector pays for no more.
"""
