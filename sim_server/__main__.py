from ._cli import serve

serve(prog_name="python -m sim_server")
