from siamtool.cli import main

main()
