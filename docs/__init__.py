"""The project's documentation; ``docs.state_diagram`` keeps the README's picture of the states drawn."""
