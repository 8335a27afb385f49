from experiments.claims.runner import main

main()
