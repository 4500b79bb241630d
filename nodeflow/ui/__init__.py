"""The browser editor: a NiceGUI page around a Vue Flow canvas, talking only to a Session."""
