from posekit.cli.main import main

main()
