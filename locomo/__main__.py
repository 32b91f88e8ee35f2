try:  # `python -m locomo`: an interrupt while the CLI module itself is imported is one line too
    from locomo.cli import main
except KeyboardInterrupt:
    import sys

    print("locomo: interrupted while starting up; nothing was written", file=sys.stderr)
    raise SystemExit(130) from None

main()
