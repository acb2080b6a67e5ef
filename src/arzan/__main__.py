from arzan.cli import run

run()
