"""gunicorn settings; `gunicorn wsgi:app` reads this file from the working directory.

gunicorn answers an oversized or garbled request line or header with an HTML page, which the
frontend cannot read. nginx in front refuses those first, with JSON (README, "Deployment"):
its request-line and header buffers are 8 KB, so gunicorn's limits sit at or above them.
"""
limit_request_line = 8190  # gunicorn's maximum; nginx refuses longer lines (414) first
limit_request_field_size = 8190  # one header line, like nginx's 8 KB buffer
limit_request_fields = 32768  # nginx already caps all headers at 4 x 8 KB
