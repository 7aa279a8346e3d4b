"""3D object detection on LiDAR bird's-eye-view maps: PointPillars pillars, anchors, head, losses, post-processing."""
