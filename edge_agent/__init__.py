"""edge-agent: one outbound tunnel to the relay, serving requests from a local target."""
