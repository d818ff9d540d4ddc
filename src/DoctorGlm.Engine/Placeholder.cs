namespace DoctorGlm.Engine;
/// <summary>Engine version.</summary>
public static class EngineInfo { /// <summary>Name.</summary>
public const string Name = "DoctorGlm.Engine"; }
