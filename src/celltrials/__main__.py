from celltrials.cli import main

main()
