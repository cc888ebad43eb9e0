"""Image generation: the OpenAI images API translated to ComfyUI workflows (SPEC section 9).

``request`` checks an OpenAI request, ``families`` knows the model families and their files,
``workflows`` fills the API-format templates shipped beside it, ``comfy`` runs one job on a
ComfyUI backend, ``cache`` keeps the PNGs that ``url`` answers point at, and ``service``
joins them for the ``/v1/images/generations`` handler.
"""
