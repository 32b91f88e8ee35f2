from locomo.cli import main

main()
