import grpc
from rover_safety.api import robot_pb2, robot_pb2_grpc


def test_daemon_serves_resource_names(make_daemon):
    daemon = make_daemon()
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        reply = robot_pb2_grpc.RobotServiceStub(channel).ResourceNames(robot_pb2.ResourceNamesRequest(), timeout=5)
    assert sorted(r.name for r in reply.resources) == ["base", "left", "right"]
