"""What the API, the CLI and the worker share to reach Temporal: settings, the connection (data
converter, encryption, TLS, telemetry), the invoice commands and the namespace set-up."""
