"""``python -m hello_asgi --app app:asgi``: ``twist hello-asgi`` by another name."""

from .runner import main

main()
