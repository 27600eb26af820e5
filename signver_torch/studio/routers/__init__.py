"""The Studio's routes, one module per area; ``studio.app`` includes each module's ``router``."""
