"""videocls: spatiotemporal video classification, faithful to the papers and small enough to read."""

from videocls.models import create_model, get_model_config, list_models

__all__ = ["create_model", "get_model_config", "list_models", "open_video"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # open_video pulls in decord/PyAV; import it lazily so `import videocls` stays light.
    if name == "open_video":
        from videocls.data.io.reader import open_video

        return open_video
    raise AttributeError(name)
