"""The MQTT contract shared by the edge daemon and the central host (later issue)."""
