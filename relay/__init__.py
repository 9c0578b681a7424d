"""edge-relay: gives each agent a public URL and forwards requests down its tunnel."""
