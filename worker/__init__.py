"""The Temporal worker (workflows, activities, sandbox, start-up checks) and the embedded dev stack."""
