"""What gunicorn (``gunicorn wsgi:app``) and ``flask run`` load."""

from app import create_app

app = create_app()
