from rest_framework.response import Response
from rest_framework.views import APIView


class TraceListView(APIView):
    def get(self, request):
        return Response({})


class TraceDetailView(APIView):
    def get(self, request, trace_id):
        return Response({})
