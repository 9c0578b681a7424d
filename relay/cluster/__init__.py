"""The relay cluster: several ``edge-relay serve --cluster redis://... --node-url URL``
processes that share one Redis.

What lives in Redis (keys under ``edge:``):

* ``edge:session:<name>`` -> the URL of the node that holds the name's session, with a
  TTL each node refreshes (:mod:`relay.cluster.node`); changes are announced on the
  ``edge:sessions`` channel, so every node answers "who holds X?" from a local cache;
* ``edge:pool:<name>|<node URL>`` -> the number of a pooled name's members on that node,
  one key per node that holds some, with the same TTL and ``pool`` / ``unpool``
  messages (:mod:`relay.cluster.pooling`);
* ``edge:tokens`` (hash name -> record) and the ``edge:tokens`` channel: the token store
  and its revocations (:mod:`relay.cluster.tokens`);
* ``edge:tcp-ports`` (hash port -> name): TCP tunnel ports, allocated cluster-wide;
* ``edge:cluster-secret``: the secret a node presents when it forwards a public request
  to another node (:mod:`relay.cluster.hop`), created by the first node that starts.

Without ``--cluster`` none of this is imported: the single-process relay needs no Redis.
"""
