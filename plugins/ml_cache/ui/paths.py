"""Where the ML cache plugin serves its pages: one definition for the app, its nav entry and the build's trigger
form (which must not import the app: the DAG file would load FastAPI and the API server's modules)."""

URL_PREFIX = "/ml-cache"
PUBLISHED_CARD = "/published.svg"  # the published image set as an image, for the trigger form


def relative(path: str = "/") -> str:
    """`path` under the prefix as a relative URL: the UI resolves it against its <base href> (Airflow's base path),
    so it works when [api] base_url puts Airflow under a sub-path, where an absolute /ml-cache/ would not."""
    return f"{URL_PREFIX.lstrip('/')}{path}"
