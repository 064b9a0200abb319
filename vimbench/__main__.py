from vimbench.cli import main

main()
