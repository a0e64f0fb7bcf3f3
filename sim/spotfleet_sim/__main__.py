"""``python -m spotfleet_sim --port N``: run the stand-in cloud."""

from spotfleet_sim import server

if __name__ == "__main__":
    server.main()
