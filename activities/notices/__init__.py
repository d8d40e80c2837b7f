"""Client notices: rendering (Jinja2) and delivery (SMTP), exactly once per workflow step."""
