"""The drag-editing service: the HTTP API and browser UI on Ray Serve (app.py), the model side
(editor.py), request checking (request.py) and a client (client.py, which imports nothing of
the project)."""
