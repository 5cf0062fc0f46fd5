"""``layersal serve``: the web app and its JSON API on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import (
    DeviceOpt,
    LmHeadOpt,
    ModelOpt,
    PickleOpt,
    _user_errors,
    _ZeroShot,
    app,
    err,
    zero_shot_options,
)


@app.command()
@zero_shot_options
def serve(
    zero_shot: _ZeroShot,
    model: ModelOpt = "sst2-tiny",
    lm_head: LmHeadOpt = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback is reachable by others.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_chars: Annotated[int, typer.Option(help="Longest text accepted, in characters.")] = 5000,
    max_batch: Annotated[int, typer.Option(help="Most texts per API request.")] = 32,
    max_rows: Annotated[
        int,
        typer.Option(
            help="Most model rows (a text through one forward pass) one request may cost, "
            "counted from its method's options before it runs (a token classifier's entities "
            "once they are found, before any is explained)."
        ),
    ] = 5000,
    timeout: Annotated[
        float, typer.Option(help="Seconds one request may take before a 503/504 error.")
    ] = 60.0,
    device: DeviceOpt = "cpu",
    allow_pickle: PickleOpt = False,
) -> None:
    """Local web app: type a text, see its heat-map, layers and decoded tokens (and a JSON API)."""
    with _user_errors():
        import layersal

        from ..errors import InputError

        try:
            import uvicorn

            from ..serve import create_app, is_loopback, loopback_hosts
        except ImportError as exc:
            raise InputError(f"serve needs the fastapi and uvicorn packages ({exc})") from None
        lm = layersal.load(
            model, lm_head, allow_pickle=allow_pickle, device=device, **zero_shot.load_options()
        )
        local = is_loopback(host)
        web = create_app(
            lm,
            max_chars=max_chars,
            max_batch=max_batch,
            max_rows=max_rows,
            timeout_s=timeout,
            allowed_hosts=loopback_hosts(host) if local else None,
        )
    if not local:
        err.print(
            f"[bold yellow]warning:[/] listening on {host}, not loopback: anyone who can reach "
            "this "
            f"machine on port {port} can use the app and its API (no authentication). "
            "Use --host 127.0.0.1 to keep it local.",
            soft_wrap=True,
        )
    shown = f"[{host}]" if ":" in host else host
    err.print(f"layersal: serving {lm.name} on http://{shown}:{port}/  (Ctrl+C to stop)")
    from ..serve.stalls import header_timeout_protocol

    # a client must finish its request head within 10 s (its body: see create_app)
    uvicorn.run(web, host=host, port=port, log_level="warning", http=header_timeout_protocol(10.0))
