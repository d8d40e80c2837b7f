"""Activities: every piece of I/O the workflows ask for (Postgres, SMTP, service blocks)."""
