"""Device shadows: the pure document model (document.py) shared by ShadowManager and the cloud emulation."""
